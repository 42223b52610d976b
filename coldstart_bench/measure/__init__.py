"""The measuring wing: engine, images, testbed, runner, lifecycle events, delay, database, environment,
executor."""
