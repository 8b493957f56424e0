"""Media awareness: what a stored file is (:mod:`.probe`), its posters (:mod:`.posters`), and the
faststart rewrite of MP4/MOV (:mod:`.faststart`, pure). :mod:`.service` runs them off the
request path."""
