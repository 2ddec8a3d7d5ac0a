"""Analytics: windowed figures of the saga over HTTP. `python -m services.analytics`."""

from services.analytics.app import main

main()
