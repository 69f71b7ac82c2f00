//! Runs Kiln's services: dependencies, start conditions, restarts with backoff, health, cgroups, logs.
