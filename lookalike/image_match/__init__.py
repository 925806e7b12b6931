"""image-match 1.1.2's Python API on lookalike: change ``image_match`` to
``lookalike.image_match`` in the imports, and the rest of the code runs as it did.

``goldberg.ImageSignature`` makes the same signatures, bit for bit, for every parameter it
takes; ``signature_database_base`` has the same records, words and distances and the same
base class for drivers; ``elasticsearch_driver.SignatureES`` (official 8.x client) and
``mongodb_driver.SignatureMongo`` (pymongo 4) read and write image-match's documents. The
differences, each on purpose, are in the README's "Coming from image-match".
"""
