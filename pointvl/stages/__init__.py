"""Thin command-line entry points, one per DVC stage: parse args -> config -> call the package."""
