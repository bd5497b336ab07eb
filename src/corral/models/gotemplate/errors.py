"""The one exception of the package: a template that does not parse or does not execute."""


class GoTemplateError(ValueError):
    """Parse or execution error, worded as Go's text/template words it where that is practical."""
