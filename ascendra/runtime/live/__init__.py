"""The live runtime: instances in their own processes (or Ray actors), the router in the server."""
