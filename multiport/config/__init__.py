"""
The configuration model and the edges that build it: the --ports
grammar, the TOML file, the files an operator names.
"""
