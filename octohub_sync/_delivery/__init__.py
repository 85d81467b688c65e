"""Results on their way to the hub: sent, confirmed, or kept (in memory or in the ledger file) until
the hub has read them."""
