from assistant.environment import QUIET_OFFLINE, quiet

# Quiet the outside world: no analytics, no hub, no telemetry, in every test.
quiet(QUIET_OFFLINE)
