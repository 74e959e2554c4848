"""music_mood: music from your own library that fits a photo; the package behind app.py, recommend.py,
image_to_vector.py and music_to_vector.py (one concern per module: see README, Development)."""
