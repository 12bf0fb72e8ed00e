"""One module per tab of the page (Parents, MRI, Evolve, Health, Publish, Runs); tabs never import each other."""
