"""``python -m bgcodec``: the same as the ``bgcodec`` command."""

from bgcodec.cli import main

if __name__ == "__main__":
    main()
