"""Pipeline stages: thin file-in/file-out steps over the kprune library (run by DVC and flows)."""
