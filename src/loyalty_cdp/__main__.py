from loyalty_cdp.cli.main import main

main()
