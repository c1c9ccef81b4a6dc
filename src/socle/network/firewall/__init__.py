"""The firewall: NetworkPolicy objects compiled to one nftables table and loaded atomically.

:mod:`.compiler` is pure (policies + instances -> ruleset text); :mod:`.nft` runs ``nft``
(load with ``nft -f``, read counters with ``nft -j``); :mod:`.service` is the control-plane
part that recompiles when policies or instances change.
"""
