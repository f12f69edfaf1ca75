"""Tools the assistant graph can offer to the model."""
