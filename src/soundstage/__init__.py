"""soundstage."""
