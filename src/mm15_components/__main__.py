from mm15_components.cli import main

main()
