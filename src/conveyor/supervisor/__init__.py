"""``conveyor up``: the whole platform as supervised child processes on one machine.

``config`` decides ports, paths and each child's environment; ``children`` starts, watches
and stops process groups; ``bootstrap`` prepares the database (migrations, admin, demo);
``startup`` runs it all in order and supervises; ``report`` is what the terminal shows.
"""
