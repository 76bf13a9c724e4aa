//! TODO: filled in by the models work.
