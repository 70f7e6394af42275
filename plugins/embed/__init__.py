"""Built-in plugin: the ``embed`` stage (timm features, near duplicates by cosine similarity, outliers)."""
