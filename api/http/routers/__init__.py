"""HTTP routers: thin translations between requests and the store / run control."""
