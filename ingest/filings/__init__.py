"""SEC EDGAR current filings: the getcurrent Atom feed, filing indexes and primary documents."""
