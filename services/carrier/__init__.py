"""The carrier: a stand-in for a third party's shipping API (book a shipment, cancel a
booking, address validation), run as its own process so shipping calls it over real HTTP."""
