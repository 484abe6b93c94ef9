"""The asynchronous parameter server: roles, the server side and the workers' strategy."""
