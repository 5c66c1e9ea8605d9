"""Destination types: one module each, registered in ``conveyor.pipelines.registry``."""
