"""gonio.shell: the interactive shell (commands, parameters, rendering)."""
