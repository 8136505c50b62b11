"""Patient privacy: de-identification (``deid``), encryption at rest (``crypto``), audited purge (``purge``)."""
