"""Mail authentication of forwarded mail: DNS through one configurable resolver, DKIM
keys per managed domain, DKIM/SPF/DMARC checks of incoming mail, Authentication-Results
and ARC sealing. Knows nothing of milters or sockets."""
