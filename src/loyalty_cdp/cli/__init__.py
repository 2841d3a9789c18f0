"""The ``loyalty-cdp`` command line: a thin layer over the library; errors become exit codes here."""
