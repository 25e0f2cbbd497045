"""The end-to-end pipeline: resumable stages, one progress stream, one report."""
