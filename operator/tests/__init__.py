"""The operator's tests. A package, so that pytest imports them as `tests.*`: under the name
`operator.*` they would replace the stdlib `operator` module for the whole session."""
