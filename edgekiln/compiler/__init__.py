"""The compiler core: frontend, Graph, passes infrastructure, targets, Program, artifacts."""
