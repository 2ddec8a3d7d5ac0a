"""The payment provider: a stand-in for a third party's card API (authorise, capture, void,
refund, a ledger), run as its own process so payments calls it over real HTTP."""
