"""What a job shows in Discord after its command: buttons, progress and the posted result."""
