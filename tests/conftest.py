"""Shared pytest set-up.

``tests`` is a package, so pytest puts the repository root on ``sys.path`` when it imports this
file first: every test module, wherever it lives, can then ``import tests.support``.

Marker rules: a test that talks to the real RabbitMQ, Redis or PostgreSQL on this machine is
marked ``integration``; one that takes more than a few seconds is also marked ``slow``.
Unit tests (``tests/unit``) open no socket at all.
"""
