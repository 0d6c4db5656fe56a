"""News feeds (RSS 2.0, Atom, JSON Feed) polled politely and published as Documents."""
