from services.query.app import main

main()
