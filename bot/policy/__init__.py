"""What a server decides: guild policy, moderation, quotas, member settings, styles, prompt
safety, visibility. Pure: no torch, no discord."""
