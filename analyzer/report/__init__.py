"""Report layer: DataFrames, exports, terminal tables, transcripts (and plots and HTML)."""
