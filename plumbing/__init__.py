"""Plumbing and hardening: flags and one-line errors, chat-template fallbacks, run folders and --resume, the checks of
task files written by others, tables and plots. A reader does not need this package to understand MOSAIC."""
