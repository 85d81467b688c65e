"""What differs by operating system, in one place."""
