"""Layer dropping: remove whole decoder layers, least important first (see README.md)."""

from compressor.stages.layer_drop.base import LayerDropStage, choose_layers_to_drop

__all__ = ["LayerDropStage", "choose_layers_to_drop"]
