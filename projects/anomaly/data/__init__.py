"""Data for the anomaly task: generated textures (domains A-D) in the MVTec AD layout."""
