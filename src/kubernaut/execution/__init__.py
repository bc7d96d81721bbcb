"""Execution backends: Tekton PipelineRuns."""
