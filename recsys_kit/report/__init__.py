"""Reports: the HTML page with plots (page), a tuning study's page (study) and the runs table (run_table).

Imports everything below it (runs, tune); nothing imports report but api and cli.
"""
