"""The label convention shared by the side that writes labels (the chat template, collation,
packing) and the side that reads them (the loss). It imports nothing from the package, so the
data and language packages both import it without depending on each other for it."""

IGNORE_INDEX = -100
"""Label of positions that carry no loss (prompt, images, padding); PyTorch's cross-entropy
default ``ignore_index``."""
