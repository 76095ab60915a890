"""Device profiles and use-case presets (YAML data read by ``edgesight.edge.fleet.profiles``).

A package only so that the YAML files ship in the wheel and are found with
``importlib.resources``; it contains no code.
"""
