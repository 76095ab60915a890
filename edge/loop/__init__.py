"""The real-time loop: ``RunConfig``, the runner, a whole ``edgesight run`` session, statistics, the systemd watchdog."""
