from mm15_components.moe.convert import convert_to_moe, moe_aux_loss, moe_load_stats
from mm15_components.moe.layer import MoEFeedForward
from mm15_components.moe.router import TopKRouter

__all__ = ["MoEFeedForward", "TopKRouter", "convert_to_moe", "moe_aux_loss", "moe_load_stats"]
