"""Configuration formats (BEHAVIOUR.md §7) with validation."""
