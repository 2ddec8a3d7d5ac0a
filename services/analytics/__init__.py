"""Analytics: live windowed business figures of the saga, computed with faust-streaming."""
