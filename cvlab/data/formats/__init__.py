"""On-disk dataset families, one module each, and what they share (`base`): lazy sample indexes, safe image
loading, annotation parsing that names file:line."""
