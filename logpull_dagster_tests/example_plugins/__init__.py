"""Two plug-ins written the way a new contributor (or a third-party package) writes one: each is one
module declaring its config model, its factory and a ``PLUGINS`` list, and nothing else in the
project changes. ``test_plugins.py`` registers them, through ``plugins.register`` and through a real
entry point."""
