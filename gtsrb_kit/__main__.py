from gtsrb_kit.cli import main

main()
