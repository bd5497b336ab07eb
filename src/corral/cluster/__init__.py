"""corral on Ray Serve (issue 17): one node per machine, routed by where a model is warm."""
