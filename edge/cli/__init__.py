"""The device-side commands of ``edgesight``: run, classify, benchmark, doctor, profiles, bundle, deploy, wheels."""
